from twilight_agent.cli import main

raise SystemExit(main())
