from lineguard.runtime.cli import main

raise SystemExit(main())
