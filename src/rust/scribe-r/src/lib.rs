// glue placeholder
