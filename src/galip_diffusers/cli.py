"""The ``galip`` command and the error handling shared by every ``galip-*`` command, defined in :mod:`galip_lite.cli`
(outside this package, so that they start without importing diffusers) and re-exported here."""

from galip_lite.cli import (  # noqa: F401
    COMMANDS,
    DTYPES,
    GALIP_EXAMPLES,
    ArgsCheck,
    Command,
    build_parser,
    generate_main,
    main,
    run_cli,
    torch_dtype,
)
