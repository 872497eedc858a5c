"""What the tests share, imported as ``support.<module>``: tests/ is on sys.path
(pytest puts the directory of the root conftest there), so every test directory
imports the same modules, and no test module imports another.

- :mod:`support.entries`: releases and entries to log (the one release factory).
- :mod:`support.harness`: a log server under test, the real app on loopback; its
  sequencer's clock, which a test can hold; ``until``, to wait for a condition.
- :mod:`support.faults`: fault injection around a real storage.
- :mod:`support.ledger`: the ledger over HTTP, and the vendor keys its tests use.
- :mod:`support.livelog`: a log server in a background thread, for synchronous clients.
- :mod:`support.logcheck`: re-verify a whole log over HTTP.
- :mod:`support.processes`: real ``firmlog-server`` and ``firmlog-monitor``
  processes on loopback, stopped whatever happens.
- :mod:`support.hostile`: hostile inputs (colliding key IDs, extra signature lines).
- :mod:`support.mutations`: mutations of valid inputs, for fuzzing parsers.
"""
