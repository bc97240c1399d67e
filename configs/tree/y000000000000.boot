#!version:1.0.0.1
## The common boot file of the example tree: every phone without a <mac>.boot reads it (no phone has one here).
## Files are downloaded top to bottom; later values override earlier ones.

## The common CFG of each model in use ([MODEL] prefixes need firmware 83 or later).
[T46U]include:config "y000000000108.cfg"
[T48U]include:config "y000000000109.cfg"
[T54W]include:config "y000000000096.cfg"

## Shared by every phone.
include:config "sip.cfg"
include:config "features.cfg"

## The phone's own file: rendered by bootstrapd from {mac}.cfg.j2 and the inventory (configs/phones.csv).
include:config "$MAC.cfg"

overwrite_mode = 1
specific_model.excluded_mode = 0
