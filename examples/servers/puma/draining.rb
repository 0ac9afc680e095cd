# Puma's graceful stop (SIGTERM), made to lose no request under overseer.
#
# On stop, puma 5.6's reactor closes every connection it holds with no
# request in progress: an idle keep-alive connection while its client may be
# sending the next request on it, and a connection accepted but not yet read.
# A thread that has just answered with keep-alive also closes its connection
# once the server stops queueing. Here, from SIGTERM on, every response says
# `Connection: close` (puma's own choice once it stops queueing requests),
# every open connection is served its next request, and one still idle GRACE
# seconds after SIGTERM is closed.
#
# It also mends two things of puma 5.6 that lose requests around a stop: its
# accept loop may wait forever for a free thread (see ThreadPool below), and
# it closes its listening socket under threads still using it (see Binder).

module Draining
  # How long a connection may stay idle after SIGTERM before it is closed:
  # its client has stopped sending, so no request can be in flight.
  GRACE = 2.0

  @deadline = nil

  def self.begin!
    @deadline ||= Process.clock_gettime(Process::CLOCK_MONOTONIC) + GRACE
  end

  # Seconds left of the grace, or nil while not draining.
  def self.remaining
    @deadline && [@deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max
  end

  module Server
    def stop(sync = false)
      Draining.begin!
      # From now on puma answers `Connection: close` and hands no connection
      # to the reactor, even before its accept loop reads the stop.
      @queue_requests = false
      super
    end

    # The reactor hands a connection over when it has a request, times out,
    # or shuts down; at shutdown puma closes the idle ones. Here a thread
    # serves every connection the reactor hands over once the server stops
    # queueing. (Puma's own method, with that one change.)
    def reactor_wakeup(client)
      if !@queue_requests || client.try_to_finish
        @thread_pool << client
        true
      elsif client.timeout == 0
        client.timeout!
      else
        client.set_timeout(@first_data_timeout)
        false
      end
    rescue StandardError => e
      client_error(e, client)
      client.close
      true
    end
  end

  module Client
    # After a keep-alive response, when draining: wait for the next request
    # (until the grace ends) rather than let puma close the connection.
    def reset(fast_check = true)
      super || (Draining.remaining && (finish(Puma::Const::FIRST_DATA_TIMEOUT) || true))
    end

    # A connection with no request begun waits only for what is left of the
    # grace; one in the middle of a request keeps puma's timeout.
    def finish(timeout)
      left = Draining.remaining
      super(left && can_close? ? left : timeout)
    end
  end

  module ThreadPool
    # The accept loop waits here for a thread to be free. A thread signals it
    # only when it finds no queued work; one that takes queued work right
    # after its last makes the pool less busy without a signal, and the loop
    # sleeps on while a thread is free. Once each busy thread holds a
    # keep-alive connection, nothing wakes it: no new connection is accepted.
    # Check again every 10 ms.
    def wait_until_not_full
      with_mutex do
        @not_full.wait(@mutex, 0.01) until @shutdown || busy_threads < @max
      end
    end
  end

  module Binder
    # Puma closes its listening socket as it stops, before its threads are
    # done, and a thread deciding whether to keep a connection alive may be
    # polling that socket then (an IOError, answered with a bare 500). The
    # master holds the socket: it stays open until the worker exits.
    def close; end
  end
end

Puma::Binder.prepend(Draining::Binder)
Puma::ThreadPool.prepend(Draining::ThreadPool)
Puma::Server.prepend(Draining::Server)
Puma::Client.prepend(Draining::Client)
