"""The report's analyses: which runs count (``selection``), the paper's claims judged
(``claims``), time per epoch (``speed``), the JPEG mirror's cost (``jpeg_cost``), receptive
fields (``receptive_field``), the signal at initialisation (``init_signal``) and the paper's
own values (``paper``)."""
