# Shared pieces of the scenarios written with Ruby's stomp gem (Debian's ruby-stomp, 1.4.10):
# the broker addresses from the command line, connections as the gem's users open them, an
# inbox that records what a subscription and the RECEIPTs deliver and lets a script wait for
# a condition with a deadline, and a clear way to fail.
#
# Every scenario takes the broker addresses as HOST:PORT arguments (the Rust test passes the
# cluster's nodes), prints OK and exits 0 when every check held, and exits 1 with a message on
# stderr otherwise. Every wait is bounded, so a broker that goes silent fails the scenario
# instead of hanging it.

require "stomp"

$stdout.sync = true

module Scenario
  # Long enough for a debug build on a busy 2-core machine; never a measure of speed.
  WAIT = 20.0

  # A check did not hold; the message says which and what was seen.
  class Failed < StandardError; end

  # Records what the gem's listener thread hands over: the MESSAGE frames of the subscriptions
  # it is the block of, and the RECEIPTs of the SENDs it is the receipt block of.
  class Inbox
    def initialize(name)
      @name = name
      @lock = Mutex.new
      @cond = ConditionVariable.new
      @messages = []
      @receipts = []
    end

    attr_reader :name

    def on_message(message)
      @lock.synchronize do
        @messages << message
        @cond.broadcast
      end
    end

    def on_receipt(receipt)
      @lock.synchronize do
        @receipts << receipt.headers["receipt-id"]
        @cond.broadcast
      end
    end

    # Waits until the block holds (called under the lock); fails after `timeout` seconds.
    def wait_until(what, timeout = WAIT)
      deadline = now + timeout
      @lock.synchronize do
        until yield
          left = deadline - now
          if left <= 0
            raise Failed, "#{@name}: timed out after #{timeout.round} s waiting for #{what}; " \
                          "seen #{@messages.size} messages #{summary}, #{@receipts.size} receipts"
          end
          @cond.wait(@lock, left)
        end
      end
    end

    def wait_for_receipts(count, timeout = WAIT)
      wait_until("#{count} receipts", timeout) { @receipts.size >= count }
    end

    def wait_for_messages(count, timeout = WAIT)
      wait_until("#{count} messages", timeout) { @messages.size >= count }
      messages
    end

    # Waits for a message the block accepts (called under the lock); returns it.
    def wait_for_message(what, timeout = WAIT)
      found = nil
      wait_until(what, timeout) { found = @messages.find { |m| yield m } }
      found
    end

    # Lets `seconds` pass and returns the messages seen, for checks that nothing more came.
    def quiet_for(seconds)
      sleep seconds
      messages
    end

    def messages
      @lock.synchronize { @messages.dup }
    end

    def receipts
      @lock.synchronize { @receipts.dup }
    end

    # Returns the messages seen so far and forgets them.
    def take
      @lock.synchronize do
        taken = @messages
        @messages = []
        taken
      end
    end

    private

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def summary
      bodies = @messages.map { |m| m.body.bytesize > 40 ? "#{m.body.bytesize} bytes" : m.body }
      bodies.first(10).inspect
    end
  end

  module_function

  def check(condition, message)
    raise Failed, message unless condition
  end

  def log(text)
    puts text
  end

  # The HOST:PORT arguments as the gem's :hosts list.
  def hosts(argv = ARGV)
    if argv.empty? || argv.any? { |a| a.start_with?("-") }
      warn "usage: #{File.basename($PROGRAM_NAME)} HOST:PORT..."
      exit 2
    end
    argv.map do |arg|
      host, _, port = arg.rpartition(":")
      { login: "", passcode: "", host: host, port: Integer(port) }
    end
  end

  # Runs the block, turning a failed check or an unexpected error into exit status 1.
  def run
    yield
  rescue Failed => e
    warn "FAILED: #{e.message}"
    exit 1
  rescue StandardError => e # a stomp gem error, or a broker's ERROR raised into this thread
    warn "FAILED with #{e.class}: #{e.message}"
    warn e.backtrace.first(8).join("\n")
    exit 1
  else
    puts "OK"
  end

  # A connected STOMP 1.2 client and an inbox for it. Not `reliable`: a scenario must see a
  # broker that drops it, not reconnect behind its back.
  def connect(hosts, name)
    client = Stomp::Client.new(
      hosts: hosts,
      reliable: false,
      connect_timeout: WAIT.to_i,
      connread_timeout: WAIT.to_i,
      parse_timeout: WAIT.to_i,
      connect_headers: { "accept-version" => "1.2", "host" => "localhost" }
    )
    check(client.open?, "#{name}: not connected after CONNECT")
    check(client.protocol == Stomp::SPL_12,
          "#{name}: the broker chose STOMP #{client.protocol}, not 1.2")
    [client, Inbox.new(name)]
  end

  # SEND with a receipt (the gem asks for one when `publish` has a block) and wait for it:
  # after this the broker has the message.
  def publish(client, inbox, destination, body, headers = {})
    before = inbox.receipts.size
    client.publish(destination, body, headers) { |receipt| inbox.on_receipt(receipt) }
    inbox.wait_for_receipts(before + 1)
  end

  # SUBSCRIBE with the inbox as the listener.
  def subscribe(client, inbox, destination, id, headers = {})
    client.subscribe(destination, { id: id, ack: "auto" }.merge(headers)) do |message|
      inbox.on_message(message)
    end
  end
end
