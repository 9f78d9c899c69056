from sb3_brc.cli import main

main()
