from medusa_builder.cli import main

main()
