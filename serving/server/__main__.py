from serving.server.main import main

main()
