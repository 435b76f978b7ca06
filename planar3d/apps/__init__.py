"""What users run on their scans: predict (masks, lesion tables, QC), the BIDS App."""
