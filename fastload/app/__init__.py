"""The command line: ``fastload demo | get | bench``, and its progress bar."""
