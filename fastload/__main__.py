import sys

from fastload.app.cli import main

sys.exit(main())
