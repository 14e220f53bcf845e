import sys

from lobwife_server.app import main

sys.exit(main())
