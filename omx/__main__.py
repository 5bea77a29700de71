import sys

from omx.cli import main

sys.exit(main())
