"""
Packaging for sipxmpp.

The twistd plugin lives in the top-level ``twisted_plugins/`` folder of the
source tree and is installed as ``twisted/plugins/sipxmpp_plugin.py``: Twisted
only discovers plugins in ``twisted/plugins`` directories on ``sys.path``.
No ``__init__.py`` is ever shipped there (it would shadow Twisted's own).
"""

from setuptools import find_packages, setup

setup(
    name="sipxmpp",
    version="0.1.0",
    description=(
        "Dialog-aware SIP edge proxy that puts a phone's call state into "
        "the user's XMPP presence (XEP-0146 remote control)"
    ),
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    # sipxmpp.testing (launchers of real servers for the tests, `make run`
    # and the benchmarks) is test-only: it runs from the source tree and is
    # never installed.
    packages=find_packages(include=["sipxmpp", "sipxmpp.*"],
                           exclude=["sipxmpp.testing", "sipxmpp.testing.*"]) + ["twisted.plugins"],
    package_dir={"twisted.plugins": "twisted_plugins"},
    package_data={"twisted.plugins": ["sipxmpp_plugin.py"]},
    install_requires=[
        "Twisted[tls]>=24.7",
        "wokkel==18.0.0",
        "service-identity>=24.1",
        "pyOpenSSL>=24.0",
        "cryptography>=42",
        "scramp>=1.4",
        "psycopg[binary]>=3.1",
        # Hardened XML for PUBLISH bodies (dialog-info, PIDF): no entities.
        "defusedxml>=0.7",
    ],
    extras_require={
        # slixmpp plays the user's desktop client in the integration tests.
        # docutils checks that the .rst documents render.
        "test": ["hypothesis>=6.100", "slixmpp>=1.8", "docutils"],
        "dev": ["hypothesis>=6.100", "slixmpp>=1.8", "docutils", "ruff", "mypy", "mypy-zope",
                "types-defusedxml"],
    },
    entry_points={
        "console_scripts": ["sipxmpp-admin = sipxmpp.ops.admin:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Internet Phone",
        "Topic :: Communications :: Chat",
    ],
)
