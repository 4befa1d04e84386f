from comfyfn.cli._app import main

main()
