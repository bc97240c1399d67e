from bootstrapd.cli import main

raise SystemExit(main())
