from alignbench.cli.app import main

main()
