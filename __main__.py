from vidparse.cli import main

main()
