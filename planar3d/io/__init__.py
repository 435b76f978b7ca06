"""Reading scans and finding data sets: NIfTI files, dataset layouts (MSSEG-2016, tables, BIDS), the built-in phantom."""
