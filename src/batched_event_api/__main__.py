from batched_event_api.cli.main import main

if __name__ == "__main__":
    main()
