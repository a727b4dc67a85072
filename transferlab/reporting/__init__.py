"""The report a reader meets: its sections (``report``, ``results``, ``helped``), figures,
rendering to Markdown and HTML (``render``), and what the pipeline cost (``costs``).

Layer 9, the top of the library: may import every layer below; nothing in the library imports it.
"""
