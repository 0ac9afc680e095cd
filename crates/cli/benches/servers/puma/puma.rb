# Baseline: the recipe's puma.rb without draining.rb (puma's own graceful stop).
require "socket"

workers 0                         # single mode: overseer is the master
bind_to_activated_sockets "only"  # the socket from LISTEN_FDS (fd 3), no other

# READY=1 on NOTIFY_SOCKET once the server accepts (puma 5.6 sends it only
# with the sd_notify gem installed).
Puma::Events.prepend(Module.new do
  def fire_on_booted!
    super
    path = ENV["NOTIFY_SOCKET"] or return
    path = "\0#{path[1..]}" if path.start_with?("@")
    Socket.open(:UNIX, :DGRAM) do |s|
      s.connect(Socket.pack_sockaddr_un(path))
      s.write("READY=1")
    end
  end
end)
