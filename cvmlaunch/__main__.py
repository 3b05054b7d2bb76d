from cvmlaunch.cli import main

raise SystemExit(main())
