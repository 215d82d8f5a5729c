"""``python -m clipembed.testing.fakeopenai``: serve until SIGINT/SIGTERM."""

from clipembed.testing.fakeopenai import main

main()
