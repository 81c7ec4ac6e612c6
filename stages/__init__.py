"""DVC stages of the study: each module is one stage with a thin ``main()``."""
