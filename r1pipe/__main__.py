from r1pipe.cli import main

main()
