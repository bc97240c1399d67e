#!version:1.0.0.1
## An activation-code directory (guide: "Auto Provisioning via Activation Code"): phones that dialled *123 read
## this boot file with the user name and password of the directory.
include:config "../sip.cfg"
include:config "account.cfg"
