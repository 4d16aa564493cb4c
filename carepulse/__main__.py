from carepulse.cli import main

main()
