from jobs.migrations import main

raise SystemExit(main())
