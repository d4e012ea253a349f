import sys

from bvae.cli import main

sys.exit(main())
