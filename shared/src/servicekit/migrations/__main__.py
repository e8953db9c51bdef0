from servicekit.migrations import main

raise SystemExit(main())
