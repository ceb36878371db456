from embedgen.cli import main

raise SystemExit(main())
