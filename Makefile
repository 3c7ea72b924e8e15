# The two commands of the README, plus the ones operators and benchmarks use.
.PHONY: run test bench stop lint

run:
	scripts/run

test:
	scripts/test

bench:
	scripts/bench

stop:
	scripts/service stop
	scripts/services stop

lint:
	.venv/bin/ruff check .
