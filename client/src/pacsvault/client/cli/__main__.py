import sys

from pacsvault.client.cli.main import main

sys.exit(main())
