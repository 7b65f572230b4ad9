"""ML2 mechanism driver for the Canopy OpenStack testbed: binds every port on any host.

There are no L2 agents in the box, so no real mechanism driver could bind a
port and Nova would fail the boot with PortBindingFailed.  This driver simply
declares every port bound (vif_type 'ovs', status ACTIVE).  Nova's fake virt
driver never plugs anything, so that is all Nova needs.  No traffic flows.
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True,
                                 portbindings.OVS_HYBRID_PLUG: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return
