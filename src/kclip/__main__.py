from kclip.cli import main

main()
