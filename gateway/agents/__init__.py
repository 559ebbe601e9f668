"""The agent desktop: sign-in, presence and routing (``registry``), screen-pops and the REST
context API (``desktop``)."""
