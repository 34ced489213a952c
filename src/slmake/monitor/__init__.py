"""Watch what is served: drift of the inputs and answers against the build's own data, invalid
outputs, latency against the bench, accuracy on labelled feedback (`slmake monitor`, DVC stage
`monitor`). One module per job: inputs (read), stats (the statistics), alerts (thresholds),
render (outputs), run (one pass), cli. This file imports none of them (stats needs numpy):
`slmake --help` builds the monitor's parser from cli.py alone."""
