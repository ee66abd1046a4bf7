from kitaeru.cli import main

main()
