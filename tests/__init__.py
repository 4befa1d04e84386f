"""comfyfn's test suite: a package, so pytest names each test module by its place
(``tests.unit.test_x``) and the tests import their helpers as ``tests.support.*``."""
