from clipembed.cli import main

main()
