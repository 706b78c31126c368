"""The suite's tests, one module per area of the contract.

Each test is an ``async def`` taking a `conformance.harness.Harness`,
registered with `conformance.registry.clause` under the clause IDs it checks.
Scenario data shared between modules lives in `conformance.checks._scenarios`.
"""
