from cloudtrail_adapter.cli import main

raise SystemExit(main())
