import sys

try:
    from freight.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command was still loading: nothing was started
    sys.stderr.write("\ninterrupted: nothing was started\n")
    sys.exit(130)

main()
