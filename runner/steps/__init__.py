"""The step functions the maintenance plans are built from (see ``runner.plans``).

Every function here is ``run(ctx) -> StepOutcome`` and check-then-set: it reads the server, acts only when the
server is not already in the wanted state, then verifies. What later steps need (the pre-maintenance snapshot, the
votes this run set, markers of restarts done) lives in ``ctx.state`` so an aborted or resumed run knows exactly
what to undo.
"""
