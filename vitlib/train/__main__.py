import sys

from vitlib.train.cli import main

sys.exit(main())
