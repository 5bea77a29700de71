import sys

from omx.demo.main import main

sys.exit(main())
