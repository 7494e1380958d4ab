import sys

from swinkit.cli import main

sys.exit(main())
