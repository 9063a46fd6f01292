from supervisor.cli import main

# The guard matters: the forkserver imports the main module to preload it.
if __name__ == "__main__":
    main()
