import sys

from pacsvault.daemon.main import main

sys.exit(main())
