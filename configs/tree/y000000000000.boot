#!version:1.0.0.1
# Example boot file for the lab: every Yealink phone without a <mac>.boot of its own reads this one.
include:config "common.cfg"
include:config "$MAC.cfg"
overwrite_mode = 1
