import sys

from trackerapi.cli import main

sys.exit(main())
