from statecast.server.cli import main

raise SystemExit(main())
