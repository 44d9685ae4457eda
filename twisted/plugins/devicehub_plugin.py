from twisted.application.reactors import Reactor
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class DevicehubServiceMaker:
    """
    C{twistd devicehub}. Unlike twistd's C{ServiceMaker}, its options are
    L{devicehub.tap.TwistdOptions}: a mistake is one line on stderr, not the
    whole --help. devicehub is imported only when the plugin is used; unless
    C{twistd -r} chose a reactor, it runs on L{devicehub.common.reactor}'s.
    """

    tapname = "devicehub"
    description = "Command gateway for always-connected devices: broker, node and HTTP API."

    @property
    def options(self):
        # Before devicehub.tap: importing txZMQ installs the default reactor.
        from devicehub.common.reactor import installUnlessChosen

        installUnlessChosen()
        from devicehub.tap import TwistdOptions

        return TwistdOptions

    def makeService(self, options):
        from devicehub.tap import makeService

        return makeService(options)


devicehub = DevicehubServiceMaker()

lean = Reactor("devicehub", "devicehub.common.reactor", "epoll, without a log context per event (devicehub's default)")
